"""Interactive access to a run's instance: a shell or a command (`ssh`), and a server in the job container
forwarded to localhost (`notebook`).

`target` finds the instance and opens TCP 22 for the caller only while connected; `hostkeys` checks the
instance's key; `ssh` is the transport; `forward` and `server` carry a port of the container to localhost.
"""
