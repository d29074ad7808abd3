-- Go on to the next canary step, ending a pause at the current one.
local steps = obj.spec.strategy.canary and obj.spec.strategy.canary.steps
if obj.status ~= nil and steps ~= nil and (obj.status.currentStepIndex or 0) < #steps then
  obj.status.pauseConditions = nil
  obj.status.currentStepIndex = (obj.status.currentStepIndex or 0) + 1
end
return obj
