"""The chaos run: three ``phasegate serve`` replicas under load and injected faults.

``bench/chaos.py`` (``make chaos``) runs it at full size; ``tests/test_chaos.py`` runs the
same code small. Modules: ``cluster`` (the private PostgreSQL primary and the backup
schema), ``receivers`` (the trigger receiver and the Slack webhook), ``replicas`` (the
service processes and their pipeline files), ``load`` (the reporting client), ``faults``
(the seeded fault plan), ``verify`` (the invariants) and ``run`` (all of it together).
"""
