"""imsp2pd.bittorrent"""
