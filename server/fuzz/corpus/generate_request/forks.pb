
forks:req-1@H