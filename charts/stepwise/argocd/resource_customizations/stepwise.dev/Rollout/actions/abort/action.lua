-- Return all traffic and pods to the stable version.
obj.status.abort = true
return obj
