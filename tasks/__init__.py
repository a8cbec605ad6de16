"""Task plugins: one file per task, each registering itself with `harness.task.register_task`."""
