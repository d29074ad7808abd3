-- What `kubectl stepwise promote` does: resume a manual pause first; else end the controller's
-- pause; else skip the current step.
local status = obj.status or {}
local steps = {}
if obj.spec.strategy and obj.spec.strategy.canary and obj.spec.strategy.canary.steps then
  steps = obj.spec.strategy.canary.steps
end
if obj.spec.paused == true then
  obj.spec.paused = false
elseif status.pauseConditions ~= nil and #status.pauseConditions > 0 then
  obj.status.pauseConditions = nil
elseif #steps > 0 and (status.currentStepIndex or 0) < #steps then
  obj.status.currentStepIndex = (status.currentStepIndex or 0) + 1
end
return obj
