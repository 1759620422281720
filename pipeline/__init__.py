"""Worker-side code: job kinds, media I/O and (later) models. Runs in worker processes."""
