"""Device profiles (memory budgets, backends, preferred recipes). Empty until the device-targets work lands."""
