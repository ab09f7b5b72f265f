"""Training: Lightning tasks that wrap any model fitting the task, losses, schedules and callbacks."""
