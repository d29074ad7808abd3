-- The actions Argo CD offers on a stepwise.dev Rollout: those it offers on Argo's Rollouts, plus
-- promote (what `kubectl stepwise promote` does), each enabled only where it means something.
local actions = {}
local status = obj.status or {}
local steps = {}
if obj.spec.strategy and obj.spec.strategy.canary and obj.spec.strategy.canary.steps then
  steps = obj.spec.strategy.canary.steps
end

local updating = status.currentPodHash ~= nil and status.currentPodHash ~= status.stableRS
local aborted = status.abort == true
local pausedByController = status.pauseConditions ~= nil and #status.pauseConditions > 0
local pausedByHand = obj.spec.paused == true
local stepsLeft = #steps > 0 and (status.currentStepIndex or 0) < #steps

actions["restart"] = { ["disabled"] = false, ["displayName"] = "Restart Pods" }
actions["resume"] = { ["disabled"] = not (pausedByController or pausedByHand) }
actions["promote"] = { ["disabled"] = not updating or aborted }
actions["promote-full"] = { ["disabled"] = not updating or aborted }
actions["abort"] = { ["disabled"] = not updating or aborted }
actions["retry"] = { ["disabled"] = not updating or not aborted }
actions["pause"] = { ["disabled"] = not updating or aborted or pausedByHand }
actions["skip-current-step"] = { ["disabled"] = not updating or aborted or not stepsLeft }
return actions
