
	stop here"
end
 (0