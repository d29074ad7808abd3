local actions = {}
local phase = obj.status and obj.status.phase
local finished = phase == "Successful" or phase == "Failed" or phase == "Error" or phase == "Inconclusive"
actions["terminate"] = { ["disabled"] = obj.spec.terminate == true or finished }
return actions
