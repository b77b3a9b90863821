"""The ``cowspec`` command, one module per command group.

``main`` parses the command line and dispatches; ``output`` holds the exit
statuses and the one-line messages every command shares; ``trace_commands``
is ``oracle``, ``run`` and ``check`` with traces; ``generate`` is ``check``
without traces; ``image_commands`` and ``inspect_report`` are ``flatten``,
``layers`` and ``inspect``; ``demo`` is the seed's walk-through.
"""
