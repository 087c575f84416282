"""Voice tests use the real mesh (agent_svc, chat_svc) for end-to-end checks."""

from tests.support.mesh import mesh, mesh_factory  # noqa: F401  (re-exported fixtures)
