-- Skip every remaining step, pause and analysis; a manual pause is resumed too.
if obj.spec.paused == true then
  obj.spec.paused = false
end
if obj.status == nil then
  obj.status = {}
end
obj.status.promoteFull = true
return obj
