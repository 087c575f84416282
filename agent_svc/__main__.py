"""`python -m agent_svc`."""

from agent_svc.app import main

main()
