-- Argo CD health check for modelfleet.dev/TrainingRun (docs/gitops.md).
-- Without it Argo CD calls a custom resource Healthy as soon as it exists.
-- kstatus semantics: the operator's status is current only when status.observedGeneration equals
-- metadata.generation; Stalled=True is a failure that needs a change, Reconciling=True is work
-- in progress, Ready=True is done.
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

local function says(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelfleet operator to pick it up"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled, "Stalled")
  return hs
end

-- A run is a job: its phase decides. Superseded and Cancelled runs were stopped on purpose (a newer
-- revision replaced them, or a person deleted the work): they are finished, not broken, so Healthy;
-- Suspended would leave the Argo CD application Suspended forever, as finished runs never resume.
local phase = obj.status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if obj.status.metrics ~= nil and obj.status.metrics.ne ~= nil then
    hs.message = "Succeeded, NE " .. tostring(obj.status.metrics.ne)
  end
  return hs
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = obj.status.message or obj.status.reason or "Failed"
  if obj.status.reason ~= nil and obj.status.message ~= nil then
    hs.message = obj.status.reason .. ": " .. obj.status.message
  end
  return hs
elseif phase == "Superseded" or phase == "Cancelled" then
  hs.status = "Healthy"
  hs.message = phase .. (obj.status.message ~= nil and (": " .. obj.status.message) or "")
  return hs
elseif phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = phase .. (obj.status.message ~= nil and (": " .. obj.status.message) or "")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(ready, "Ready")
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = says(reconciling, "Reconciling")
  return hs
end

hs.status = "Progressing"
hs.message = says(ready, "Waiting for the Ready condition")
return hs
