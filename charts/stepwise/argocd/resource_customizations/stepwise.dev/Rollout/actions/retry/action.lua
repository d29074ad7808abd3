-- Start an aborted update again from its first step.
obj.status.abort = false
return obj
