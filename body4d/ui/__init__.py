"""Gradio user interface: `layout` builds the widgets, `events` (the Gradio adapter) binds them.

Plain handler modules, one job each and free of Gradio: `status` (capabilities, models panel,
start-up page spec), `display` (a frame for the browser, time labels, click mapping), `loading`
(upload, browser preview), `prompts` (clicks, targets), `runs` (Mask Generation, Auto-detect,
4D Generation, Cancel), `examples` (gallery), `downloads` (the run's zip); `errors` holds the
`InputError` they raise.
"""
