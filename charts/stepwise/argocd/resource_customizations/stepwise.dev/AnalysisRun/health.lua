-- Argo CD health of a stepwise.dev AnalysisRun: its phase, with the controller's explanation of a
-- verdict (which metric, which condition, the value measured) and, while it runs, how far each
-- metric has got.
local hs = {}
local phases = {
  Pending = "Progressing",
  Running = "Progressing",
  Successful = "Healthy",
  Failed = "Degraded",
  Error = "Degraded",
  Inconclusive = "Unknown",
}

local function progress(status)
  local parts = {}
  for _, metric in ipairs(status.metricResults or {}) do
    local text = metric.name .. ": " .. (metric.count or 0) .. " measured"
    local measurements = metric.measurements or {}
    local last = measurements[#measurements]
    if last ~= nil and last.value ~= nil then
      text = text .. ", last " .. last.value
    end
    table.insert(parts, text)
  end
  return table.concat(parts, "; ")
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the stepwise controller to start the analysis"
  return hs
end
hs.status = phases[obj.status.phase] or "Unknown"
if obj.status.phase == "Pending" or obj.status.phase == "Running" then
  hs.message = "Analysis " .. obj.status.phase
  local measured = progress(obj.status)
  if measured ~= "" then
    hs.message = hs.message .. ": " .. measured
  end
else
  hs.message = obj.status.message or ("Analysis " .. obj.status.phase)
end
return hs
