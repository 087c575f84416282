"""Voice worker: the LiveKit Agents worker that talks in calls, and a WAV simulator of it."""
