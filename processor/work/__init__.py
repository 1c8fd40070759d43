"""Working on stored events: the worker, folding, effects, replay, reconciliation, onboarding."""
