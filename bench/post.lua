-- wrk script: POST / cycling through pre-signed deliveries, one per line "<X-Dt-Signature>\t<body>".
-- Usage: wrk -t1 ... -s post.lua URL -- FILE   (one wrk thread, so the file's order is the send order)
local requests, i = {}, 0

function init(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    requests[#requests + 1] = wrk.format("POST", "/", {
      ["X-Dt-Signature"] = line:sub(1, tab - 1), ["Content-Type"] = "application/json"}, line:sub(tab + 1))
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
