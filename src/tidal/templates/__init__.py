"""Runner templates: per app revision, a runner process started ahead of need that
has imported tidal's runtime and the app's module (tidal.runtime.template) and that
the next runner claims instead of starting from nothing."""

from tidal.templates.policy import template_env, template_key
from tidal.templates.pool import Template, TemplatePool

__all__ = ["Template", "TemplatePool", "template_env", "template_key"]
