-- End a pause: the controller's (a pause step, an inconclusive analysis) and a manual one.
if obj.status ~= nil and obj.status.pauseConditions ~= nil then
  obj.status.pauseConditions = nil
end
if obj.spec.paused == true then
  obj.spec.paused = false
end
return obj
