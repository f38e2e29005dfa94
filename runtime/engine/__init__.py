"""The engine: hosts of workflow executions, and how each execution persists, then acts.

``host`` (many executions, start rules, recovery, requests), ``execution`` (one
workflow execution: mailbox, lock, group commit), ``parking`` (idle executions out of
memory), ``routing`` (children and calls between workflows), ``activities`` (one
activity attempt and its retries), ``reuse`` (the id reuse rules), ``messages`` (what
crosses a process). No Ray here: ``rayline.actors`` adapts it to Ray.
"""
