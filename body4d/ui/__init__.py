"""Gradio user interface: `layout` builds the widgets, `handlers` gives them behaviour."""
