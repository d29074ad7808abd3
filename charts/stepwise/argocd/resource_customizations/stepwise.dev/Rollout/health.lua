-- Argo CD health of a stepwise.dev Rollout. stepwise writes the phase and message the way Argo
-- Rollouts does (Argo CD's own argoproj.io Rollout check reads them too); this check adds the
-- canary's weight and a message while the controller has not yet seen the latest spec.
local hs = {}

local function canarySteps(obj)
  local canary = obj.spec.strategy and obj.spec.strategy.canary
  if canary == nil or canary.steps == nil then
    return {}
  end
  return canary.steps
end

-- The weight the canary has now: the router's, or else the last setWeight reached.
local function canaryWeight(obj, steps, index)
  local canaryStatus = obj.status.canary
  if canaryStatus ~= nil and canaryStatus.weights ~= nil then
    return canaryStatus.weights.canary.weight
  end
  local weight = nil
  for i, step in ipairs(steps) do
    if i > index + 1 then
      break
    end
    if step.setWeight ~= nil then
      weight = step.setWeight
    end
  end
  return weight
end

-- The phase's message (which names the step, and the analysis that decided), with what it
-- leaves out while an update is under way: the canary's weight, none once aborted.
local function explained(obj)
  local status = obj.status
  local message = status.message or ""
  local steps = canarySteps(obj)
  local index = status.currentStepIndex
  local updating = status.currentPodHash ~= nil and status.currentPodHash ~= status.stableRS
  if not updating or status.abort == true or index == nil or index >= #steps then
    return message
  end
  local weight = canaryWeight(obj, steps, index)
  if weight == nil then
    return message
  end
  return message .. " (canary at " .. weight .. " %)"
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the stepwise controller to reconcile the Rollout"
  return hs
end
if tonumber(obj.status.observedGeneration) ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the stepwise controller to observe generation " .. obj.metadata.generation
  return hs
end

local phase = obj.status.phase
if phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = obj.status.message or ""
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = explained(obj)
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = explained(obj)
else
  hs.status = "Progressing"
  hs.message = explained(obj)
end
return hs
