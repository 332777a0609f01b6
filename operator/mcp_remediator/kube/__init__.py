"""The only way to the Kubernetes API: the client, the refusal layer every write passes,
and Events."""
