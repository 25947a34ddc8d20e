"""Training: staged optimisers with path-regex freezing, train state, mesh and sharding,
Orbax checkpoints with the grain iterator state, metrics, and the trainer that runs every stage."""
