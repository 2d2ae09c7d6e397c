"""Fixed ids of the simulated clinic account (the demo team, its waiting queue and collections).

Chosen once; the agent's settings default to these when it runs against the sandbox.
"""

from __future__ import annotations

DEMO_ACCOUNT_ID = "sandbox"
DEMO_TEAM_ID = "7d1c4b2e-5a3f-4e8b-9c61-2f0a8d3e4b57"
DEMO_WAITING_QUEUE_ID = "c2e9f6a1-8b4d-4f3a-a7e2-5d9b1c0f6e38"
DEMO_INTAKE_COLLECTION_ID = "4f8a2c6e-1d3b-4a5f-8e9c-7b0d2a6f3c91"
DEMO_CONSENT_COLLECTION_ID = "9b3e7d1f-6c2a-4e8d-b5f4-1a8c3e7d0b62"
DEMO_CLIENT_ID = "e5a1f3c7-2b9d-4c6e-8f0a-3d7b5e1c9a24"
