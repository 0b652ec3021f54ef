"""The built-in webhook templates: a sender's own JSON → notifyd events. (Being
written, issue 18.)"""
