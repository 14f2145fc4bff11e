from twisted.application.service import ServiceMaker

sockservice = ServiceMaker(
    "sockservice", "sockservice.tap", "Line servers: greet, collect, relay.", "sockservice"
)
