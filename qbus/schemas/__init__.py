"""Events, IR and job specs: data only, no I/O."""
