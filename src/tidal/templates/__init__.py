"""Runner templates: per app revision, a runner process started ahead of need that
has imported tidal's runtime and the app's module (tidal.runtime.template) and that
the next runner claims instead of starting from nothing."""

from tidal.templates.policy import sandboxed_template_key, template_env, template_key
from tidal.templates.pool import Template, TemplatePool

__all__ = ["Template", "TemplatePool", "sandboxed_template_key", "template_env", "template_key"]
