-- wrk script: GET each path of the file in PATHS_FILE in turn, with one extra header from
-- HEADER_NAME / HEADER_VALUE (a bearer token or the dashboard's session cookie).
local paths = {}
local index = 0
local headers = {}

function init(args)
  for line in io.lines(os.getenv("PATHS_FILE")) do
    paths[#paths + 1] = line
  end
  local name = os.getenv("HEADER_NAME")
  if name and name ~= "" then
    headers[name] = os.getenv("HEADER_VALUE")
  end
end

function request()
  index = index + 1
  if index > #paths then index = 1 end
  return wrk.format("GET", paths[index], headers)
end
