# WEBrick behind the sidecar, on 127.0.0.1:$PORT. Routes: see __init__.py.
require 'json'
require 'webrick'

server = WEBrick::HTTPServer.new(
  BindAddress: '127.0.0.1', Port: Integer(ENV.fetch('PORT')),
  AccessLog: [], Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN)
)
server.mount_proc('/healthz') { |_req, res| res.body = 'ok' }
server.mount_proc('/session/grow') do |req, res|
  kb = [req.query.fetch('kb', '1').to_i, 1024].min
  encoded = JSON.generate({ 'blob' => 'x' * (kb * 1024) })
  res['X-Set-Session'] = encoded
  res['Content-Type'] = 'application/json'
  res.body = JSON.generate({ 'bytes' => encoded.bytesize })
end
server.mount_proc('/') do |req, res|
  res['Content-Type'] = 'application/json'
  res.body = JSON.generate({ 'status' => req['X-Session-Status'], 'session_raw' => req['X-Session'] })
end
trap('TERM') { server.shutdown }
server.start
