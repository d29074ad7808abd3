-- Replace every pod created before now, one ReplicaSet at a time (spec.restartAt).
local os = require("os")
obj.spec.restartAt = os.date("!%Y-%m-%dT%XZ")
return obj
