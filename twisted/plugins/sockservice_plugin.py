from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

sockservice = ServiceMaker(
    "sockservice", "sockservice.tap", "Line servers: greet, collect, relay.", "sockservice"
)
directepoll = Reactor(
    "directepoll", "sockservice.fastpath.directepoll", "epoll without a log context per event"
)
