"""The page-token codec's names as chat_svc's modules import them; its home is `servicekit.paging`.

Only re-exports: delete this module once `chat_svc.conversations` and `chat_svc.messages` import
`servicekit.paging` themselves.
"""

from servicekit.paging import decode as decode
from servicekit.paging import encode as encode
from servicekit.paging import invalid_token as invalid_token
from servicekit.paging import require_int as require_int
from servicekit.paging import require_str as require_str
