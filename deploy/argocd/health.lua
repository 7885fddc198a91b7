-- Argo CD health check for OrgMetadata and UserMetadata (group metadata.zitadel-operator.dev).
-- Argo CD runs it with the live object in `obj` (gopher-lua, Lua 5.1) and reads the returned
-- table. It reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled, each
-- with observedGeneration) and never trusts a status older than the spec:
--   Healthy      Ready=True for the current generation
--   Progressing  no status yet, generation not observed yet, Reconciling=True, or not Ready yet
--   Degraded     Stalled=True (the user must fix something, including drift reported by
--                driftPolicy Report; message from Ready)
--   Suspended    spec.suspend is true (reason Suspended; the operator then writes no Ready)
local hs = {}

local function find(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  elseif message ~= "" then
    return message
  elseif reason ~= "" then
    return reason
  end
  return fallback
end

local generation = obj.metadata and obj.metadata.generation
local status = obj.status

if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = find(status.conditions, "Ready")
local reconciling = find(status.conditions, "Reconciling")
local stalled = find(status.conditions, "Stalled")

-- A status written for an older generation says nothing about the current spec.
local observed = status.observedGeneration
if ready ~= nil and ready.observedGeneration ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(ready, describe(stalled, "Stalled"))
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Synced")
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(ready, describe(reconciling, "Reconciling"))
  return hs
end

-- Suspended: Reconciling=False with reason Suspended and no Ready condition (earlier versions of
-- the operator wrote Ready=False with reason Suspended instead).
if reconciling ~= nil and reconciling.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(reconciling, "Suspended")
  return hs
end
if ready ~= nil and ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended")
  return hs
end

-- Reported drift is Stalled=True (above); earlier versions wrote only Ready=False, reason Drifted.
if ready ~= nil and ready.reason == "Drifted" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Drifted")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for Ready")
return hs
