"""imsp2pd.content"""
