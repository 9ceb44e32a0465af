# Rack app for Puma behind the sidecar. Routes: see __init__.py.
require 'json'

run(lambda do |env|
  case env['PATH_INFO']
  when '/healthz'
    [200, { 'content-type' => 'text/plain' }, ['ok']]
  when '/session/grow'
    kb = [env['QUERY_STRING'][/(?:\A|&)kb=(\d+)/, 1].to_i, 1024].min
    encoded = JSON.generate({ 'blob' => 'x' * (kb * 1024) })
    [200, { 'content-type' => 'application/json', 'x-set-session' => encoded },
     [JSON.generate({ 'bytes' => encoded.bytesize })]]
  else
    [200, { 'content-type' => 'application/json' },
     [JSON.generate({ 'status' => env['HTTP_X_SESSION_STATUS'],
                      'session_raw' => env['HTTP_X_SESSION'] })]]
  end
end)
