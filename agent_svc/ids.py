"""The names `agent_svc.tokens` takes from here; their home is `servicekit.ids`.

Only re-exports: delete this module once `agent_svc.tokens` imports `servicekit.ids` itself.
"""

from servicekit.ids import dispatch_metadata as dispatch_metadata
from servicekit.ids import room_name as room_name
