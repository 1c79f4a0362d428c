"""A small Gradio app: a text box, a button and a streamed answer (Gradio's queue)."""

import time

import gradio as gr


def greet(name: str):  # type: ignore[no-untyped-def]
    for i in range(1, 4):
        time.sleep(0.1)
        yield f"Hello, {name}! ({i}/3)"


demo = gr.Interface(fn=greet, inputs=gr.Textbox(label="name"), outputs=gr.Textbox(label="greeting"),
                    flagging_mode="never")  # fmt: skip

if __name__ == "__main__":
    demo.launch(server_name="0.0.0.0", server_port=7860)
