"""Mission Control, the host application: store, control loop, operator and the `mc` command."""
