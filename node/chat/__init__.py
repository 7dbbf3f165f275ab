"""``kith chat``: the interactive terminal client.

Layers, from pure to I/O:

* ``text``     escaping of untrusted text (names, messages) for the terminal
* ``model``    the client's state: groups, conversation rows, members, handles, notifications
* ``commands`` the input line: parsing ``/commands`` into requests, Tab completion
* ``render``   the state as plain, escaped lines (what the screen shows)
* ``backend``  async control-socket client (trio), and an in-process node when none runs
* ``session``  the controller: tasks that keep the model fresh and run commands off the UI
* ``view``     the thin urwid layer
"""
