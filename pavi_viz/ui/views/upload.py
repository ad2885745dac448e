"""A file upload that refuses, in the browser, a file too large to send to the server.

A ``pn.widgets.FileInput`` sends the whole file, base64-encoded (4/3 of its size), in
one websocket message, and the Bokeh server closes the connection (the session, with
the model being built) on a message over its limit (``--websocket-max-message-size``,
20 MiB by default). :class:`GuardedUpload` wraps a FileInput and checks each chosen
file's size in the browser before it is read: a file over ``max_bytes`` is never sent,
and the server hears only its name and size (``on_refused``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn
import param
from panel.custom import Child, JSComponent

#: The Bokeh server's default websocket message limit.
WEBSOCKET_LIMIT = 20 * 2**20
#: The largest file sent: its base64 text, with room for the message around it, fits the limit.
MAX_BYTES = WEBSOCKET_LIMIT * 3 // 4 - 2**20


class GuardedUpload(JSComponent):
    """A FileInput whose files over ``max_bytes`` stay in the browser.

    Args:
        upload: the FileInput (its ``value`` changes only for files that were sent).
        on_refused: called with the name and size (bytes) of each file refused.
    """

    upload = Child(doc="The FileInput that sends the files.")
    max_bytes = param.Integer(default=MAX_BYTES, bounds=(1, None), doc="Larger files are refused.")

    # A capturing listener on the FileInput's shadow root runs before the FileInput's own
    # listener on its <input>, which reads the file and sends it: stopping the event there
    # keeps a large file in the browser.
    _esm = """
export function render({ model }) {
  const upload = model.get_child("upload")
  upload.shadowRoot.addEventListener("change", (event) => {
    const large = Array.from(event.target.files || []).find((file) => file.size > model.max_bytes)
    if (large) {
      event.stopImmediatePropagation()
      event.target.value = ""
      model.send_msg({ name: large.name, size: large.size })
    }
  }, { capture: true })
  return upload
}
"""

    def __init__(self, upload: pn.widgets.FileInput, on_refused: Callable[[str, int], Any], **params: Any) -> None:
        super().__init__(upload=upload, **params)
        self._on_refused = on_refused

    def _handle_msg(self, data: Any) -> None:
        self._on_refused(str(data["name"]), int(data["size"]))
