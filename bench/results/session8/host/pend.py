import socket, errno, time
S = socket.SOCK_STREAM|socket.SOCK_NONBLOCK
pend = inline = 0
socks=[]
for p in range(20000, 21000):
    s = socket.socket(socket.AF_INET, S)
    c = s.connect_ex(("10.9.0.2", p))
    if c == errno.EINPROGRESS:
        st = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if st == 2: pend += 1
        else: inline += 1
    socks.append(s)
print("pending", pend, "inline", inline)
