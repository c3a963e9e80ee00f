"""The supervisor process (``supervisord-claude``) and the fork server it starts.

``_main`` parses the command line, ``_startup`` takes the locks and forks the fork server,
``_succession`` finds what a previous supervisor left, ``_supervisor`` runs the event
loop (and recovers the store through the event log); ``_control`` is the clients'
socket, ``_ops`` the commands it serves, ``_pool`` the live keepers,
``_store``/``_eventlog``/``_hub`` the durable state and its subscribers, ``_forkserver``
the thread-free process that forks keepers. It never imports the keeper's room, except the fork server, which loads the
keeper's code so forked keepers share its pages.
"""
