-- Stop measuring; the run ends with what it has measured so far.
obj.spec.terminate = true
return obj
