-- HAProxy's side of Tollgate's forward-auth (haproxy.cfg): asks
-- /api/v1/forward-auth with the request's key, method and path, and sets
-- txn.tg_* from the answer. Placeholder: {{TOLLGATE}}, Tollgate's address.
local tollgate = "http://{{TOLLGATE}}/api/v1/forward-auth"

local answers = {
    tg_error = "x-tollgate-error", tg_message = "x-tollgate-message",
    tg_retry = "retry-after", tg_tenant = "x-tollgate-tenant",
    tg_limit = "x-ratelimit-limit", tg_remaining = "x-ratelimit-remaining",
    tg_reset = "x-ratelimit-reset", tg_ratelimit = "ratelimit",
    tg_policy = "ratelimit-policy",
}

-- A header's first value (HAProxy's tables count from 0).
local function first(headers, name)
    local v = headers and headers[name]
    if v == nil then return nil end
    if type(v) == "table" then return v[0] or v[1] end
    return v
end

core.register_action("tollgate_auth", { "http-req" }, function(txn)
    local asked = txn.http:req_get_headers()
    local send = {
        ["x-forwarded-method"] = { txn.sf:method() },
        ["x-forwarded-uri"] = { txn.sf:pathq() },
    }
    -- Only the key is passed on: the method and path are HAProxy's, and a
    -- cost, if any, is this file's to set (never the client's header).
    for _, name in ipairs({ "authorization", "x-api-key" }) do
        local v = first(asked, name)
        if v ~= nil then send[name] = { v } end
    end
    local res = core.httpclient():get{ url = tollgate, headers = send, timeout = 2000 }
    if res == nil or res.status == nil or res.status == 0 then
        txn:set_var("txn.tg_status", "503")
        return
    end
    txn:set_var("txn.tg_status", tostring(res.status))
    for var, name in pairs(answers) do
        local v = first(res.headers, name)
        if v ~= nil then txn:set_var("txn." .. var, v) end
    end
end)
