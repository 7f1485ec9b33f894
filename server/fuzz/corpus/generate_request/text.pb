
Hello, world