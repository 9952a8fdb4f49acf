"""Background jobs: a Dramatiq broker (Redis or in-process), the rollup actors, and the scheduler that sends them."""
