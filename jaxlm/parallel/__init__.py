"""The mesh, the one rule table, pipeline stages, multi-host start-up."""
