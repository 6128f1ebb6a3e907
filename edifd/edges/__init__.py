"""Small I/O edges shared by several parts of edifd (and the EDIF VM's agent): the places where the
sans-IO cores meet files, sockets and threads."""
