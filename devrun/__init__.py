"""Development runner: starts the whole mesh on embedded defaults (`make run`) and test processes."""
